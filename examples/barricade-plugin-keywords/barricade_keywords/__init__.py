"""Reject or tag mail by the words in it: an example Barricade plugin."""
