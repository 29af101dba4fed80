"""Training, export and benchmarking with TensorFlow/Keras (never imported by `station run`)."""
