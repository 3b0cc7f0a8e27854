"""Reading and writing weights without executing code from the file."""
