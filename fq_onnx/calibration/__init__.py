"""What calibration data tells the converter: ``calibrate`` (the seeded sample and each layer's
input statistics) and ``act_scales`` (integer mode's power-of-two activation scales)."""
