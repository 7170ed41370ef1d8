# dfd_kit in a container, for macOS and Windows (Docker Desktop) or any Linux: the Binder recipe
# (binder/apt.txt, binder/postBuild, binder/start) on Debian 12, with the pip install of
# `make setup` in place of Binder's conda environment. README "Container" has the commands:
#   docker build -t dfd_kit .
#   docker run --rm -p 8888:8888 dfd_kit     # then open the http://127.0.0.1:8888/lab?token=... it prints
FROM python:3.11-slim-bookworm

# binder/apt.txt; Node for facesjs (Binder's conda environment brings its own); and on CPUs other
# than x86-64 (Apple silicon) Debian's oneDNN 2.6 where Debian has it, since PyPI's oneDNN 2 is for
# x86-64 only (without one Jittor runs its own convolutions, about 60x slower).
COPY binder/apt.txt /tmp/apt.txt
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(cat /tmp/apt.txt) nodejs npm \
 && if [ "$(dpkg --print-architecture)" != amd64 ]; then \
        apt-get install -y --no-install-recommends libdnnl-dev || echo "no oneDNN package here"; fi \
 && rm -rf /var/lib/apt/lists/* /tmp/apt.txt

RUN useradd --create-home --uid 1000 jovyan
USER jovyan
ENV VIRTUAL_ENV=/home/jovyan/venv PATH=/home/jovyan/venv/bin:$PATH
WORKDIR /home/jovyan/dfd_kit
COPY --chown=jovyan:jovyan . .
# the oneDNN 2 wheels land in the venv's lib/ and include/, where dfd_kit looks first
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install --no-cache-dir -e . \
 && bash binder/postBuild

EXPOSE 8888
ENTRYPOINT ["bash", "binder/start"]
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "notebooks/"]
