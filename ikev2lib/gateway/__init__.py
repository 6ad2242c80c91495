"""Running a gateway: configuration files (swanctl.conf syntax, ...)."""
