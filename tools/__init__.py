"""Agent tools: Android GUI automation and image tools."""
