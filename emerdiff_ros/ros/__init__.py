"""rclpy glue: the node, its parameters, message codecs and diagnostics."""
