"""The line service: the station's main loop, metrics, systemd integration, assembly."""
