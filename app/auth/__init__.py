"""Authentication (API keys, JWT bearer), principals and role checks."""
