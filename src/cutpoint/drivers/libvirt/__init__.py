"""The libvirt driver: a domain cut through libvirt's pull-mode backup API."""
