# mathcoach, the reference AI service. Only the service and its pinned dependencies go in:
# flightcheck (the pipeline) is not part of this image.

# --- build stage: a virtualenv with the dependencies ------------------------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY src/mathcoach/requirements.txt /tmp/requirements.txt
# sympy's own test suites are a third of its size and never imported at run time.
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && find /opt/venv/lib/python3.11/site-packages/sympy -type d -name tests -prune -exec rm -rf {} +
COPY src/mathcoach /opt/app/mathcoach
# Bytecode compiled at build time: the non-root user cannot write it, and cold starts count.
RUN rm -f /opt/app/mathcoach/requirements.txt \
 && /opt/venv/bin/python -m compileall -q /opt/app

# --- final stage ----------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8080
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app /opt/app
USER 10001:10001
WORKDIR /home/app
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2).status == 200 else 1)"]
CMD ["python", "-m", "mathcoach"]
