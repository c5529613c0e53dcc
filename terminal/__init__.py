"""The cashier application: terminal core and Textual UI."""
