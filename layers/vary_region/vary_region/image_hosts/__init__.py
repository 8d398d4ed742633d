"""Outbound HTTP to image hosts: the URL policy and connections pinned to the checked address."""
