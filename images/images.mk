# The project's container images (images/build.py). Included by the root Makefile.
.PHONY: images images-push

images:  ## build the operator, runner-cpu and pause images with podman (content-hash cached; build/images.json)
	@python3 images/build.py build

# REGISTRY=host:port of a plain-HTTP registry, e.g. the local cluster's.
images-push: images  ## push the built images to REGISTRY=host:port (plain HTTP; skips those it has)
	@test -n "$(REGISTRY)" || { echo "usage: make images-push REGISTRY=host:port" >&2; exit 2; }
	@python3 images/build.py push --registry $(REGISTRY)
