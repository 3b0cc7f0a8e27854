"""Command-line interface: `tapkit COMMAND ...`, one module per command."""
