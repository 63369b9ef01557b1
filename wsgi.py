"""WSGI entry point: `flask --app wsgi ...`, `gunicorn wsgi:app`."""
from dashboard import create_app

app = create_app()
