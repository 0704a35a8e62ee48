"""The web console at ``/``: server-rendered HTML over the same service, tokens and roles as the REST API."""
