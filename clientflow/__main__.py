from clientflow.cli import app

app()
