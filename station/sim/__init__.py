"""Stand-ins for the hardware: a simulated Mega on a pty (and, later, a virtual conveyor)."""
