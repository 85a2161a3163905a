"""Trainers: fit / evaluate / predict loops over compiled steps."""
