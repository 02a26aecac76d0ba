"""Print a .env for a local `make run`: a fresh secret key, plain HTTP on loopback allowed."""

import secrets

print(f"SECRET_KEY={secrets.token_urlsafe(50)}")
print("DEBUG=0")
print("SECURE_SSL_REDIRECT=0")
print("SESSION_COOKIE_SECURE=0")
print("CSRF_COOKIE_SECURE=0")
print("SECURE_HSTS_SECONDS=0")
print("BEHIND_TLS_PROXY=0")
print("TRUSTED_PROXIES=")
print("ALLOWED_HOSTS=localhost,127.0.0.1,[::1]")
