"""The browser client and its static serving."""
