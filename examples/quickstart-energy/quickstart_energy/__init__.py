"""quickstart-energy: Flower's PyTorch quickstart with energy accounting by fedenergy."""
