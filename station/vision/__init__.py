"""Finding the part in a frame: the crop the classifier sees, and the vision trigger."""
