"""Energy meters, windows, attribution and the EnergyReading of a generation."""
