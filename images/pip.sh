#!/bin/sh
# Builder-stage pip of images/Dockerfile: /opt/conveyor's pip with the host's pip settings, which
# hack/images.sh passes as BuildKit secrets (never written to a layer): the CA bundle the host's pip
# trusts (an intercepting proxy's CAs), its pip.conf, and its PIP_* and proxy variables.
set -eu
if [ -s /run/secrets/pip-ca ]; then
    export PIP_CERT=/run/secrets/pip-ca SSL_CERT_FILE=/run/secrets/pip-ca
fi
if [ -s /run/secrets/pip-conf ]; then
    export PIP_CONFIG_FILE=/run/secrets/pip-conf
fi
if [ -s /run/secrets/pip-env ]; then
    . /run/secrets/pip-env
fi
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
exec /opt/conveyor/bin/python -m pip "$@"
