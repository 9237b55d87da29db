"""The HTTP edge: controllers parse and authenticate, call plain async functions, and render."""
