"""Who may do what: JWT verification (``jwt``, with JWKS) and the topic policy (``acl``)."""
