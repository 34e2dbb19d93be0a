"""Fakes for hardware the test machines lack: sysfs trees, an NVML module, a clock."""
