"""Who may do what: JWT verification (``jwt``), the JWKS keys it uses (``jwks``) and the topic policy
(``acl``)."""
