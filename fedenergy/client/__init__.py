"""The node side: the energy mod a ClientApp adds, and measured energy on deployed nodes."""
