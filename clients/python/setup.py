"""Builds the folio-client package. The gRPC stubs are generated from the repository's proto/
(two directories up) into folio_pb/ when the package is built, so an install never carries stubs
older than the protos beside it. A source distribution carries the generated stubs, so it builds
without proto/."""

import os
import shutil

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTOS = ["folio/volume/v1/volume.proto", "folio/admin/v1/admin.proto"]
OUT = os.path.join(HERE, "folio_pb")


def generate():
    if not os.path.isdir(PROTO):
        if os.path.isdir(os.path.join(OUT, "folio")):
            return  # a source distribution: the stubs are in it
        raise SystemExit(f"folio-client: {PROTO} not found; build from a Folio checkout")
    import grpc_tools
    from grpc_tools import protoc

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={OUT}",
            f"--grpc_python_out={OUT}", *PROTOS]
    if protoc.main(args) != 0:
        raise SystemExit("folio-client: generating the stubs failed")
    for d, _, _ in os.walk(OUT):
        open(os.path.join(d, "__init__.py"), "a").close()


generate()
setup(packages=find_packages(include=["folio_pb", "folio_pb.*"]))
