"""The operator's page: a small web server in the station's process (see server.py)."""
