"""Frame sources behind one interface, a time-indexed frame buffer, and the watchdog feed."""
