"""Authentication and authorisation: passwords, sessions, API tokens and the permission table."""
