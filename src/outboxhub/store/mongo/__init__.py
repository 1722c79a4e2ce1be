"""The mongo store backend; ``store`` holds the Store class and ``open_store``."""
