"""Connections that end users authorize: organizations' OAuth apps, the authorization-code flow with PKCE,
and the refresh of the tokens it obtains (docs/connections.md, "Connections a person connects")."""
