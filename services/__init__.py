"""The four Clientflow services; each owns its database and talks to the others by events."""
