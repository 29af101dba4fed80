"""`station calibrate`: camera and roi (camera.py), timing, servo, threshold; store.py writes."""
