"""`python -m app`: serve quotebot on $HOST:$PORT (Cloud Run sets PORT)."""

import os

import uvicorn


def main() -> None:
    uvicorn.run(
        "app.main:app",
        host=os.environ.get("HOST", "0.0.0.0"),
        port=int(os.environ.get("PORT", "8080")),
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
