"""Astronomical switching of street-lamp circuits, computed from the lamps' coordinates, sent as commands."""
