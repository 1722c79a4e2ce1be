"""Orders: paying one writes the order and its ``orders.paid`` event in one transaction."""
