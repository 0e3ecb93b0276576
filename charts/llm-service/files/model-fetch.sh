# model-fetch: copy the model artifact's directory into the pod's model volume and verify it, fail closed.
# Runs in the artifact image itself (sh + coreutils + findutils, no Python). Inputs (env): MODEL_SRC (the
# directory in the image), MODEL_DST (the model volume), MODEL_CONTENT_DIGEST (the release's pin:
# "sha256:" + sha256 of MANIFEST.sha256). On any mismatch the copy is removed and the container exits 1,
# so vLLM never starts on weights the release did not pin.
set -eu
: "${MODEL_SRC:?MODEL_SRC must be set}" "${MODEL_DST:?MODEL_DST must be set}" "${MODEL_CONTENT_DIGEST:?MODEL_CONTENT_DIGEST must be set}"
fail() {
  echo "model-fetch: $*" >&2
  find "$MODEL_DST" -mindepth 1 -delete
  exit 1
}
find "$MODEL_DST" -mindepth 1 -delete
cp -R "$MODEL_SRC/." "$MODEL_DST/" || fail "copy of $MODEL_SRC into $MODEL_DST failed"
cd "$MODEL_DST"
[ -f MANIFEST.sha256 ] || fail "no MANIFEST.sha256 in $MODEL_SRC"
actual="sha256:$(sha256sum MANIFEST.sha256 | cut -d' ' -f1)"
[ "$actual" = "$MODEL_CONTENT_DIGEST" ] || fail "content digest $actual != pinned $MODEL_CONTENT_DIGEST (MANIFEST.sha256 is not the release's)"
bad="$(sha256sum --check --strict --quiet MANIFEST.sha256 2>&1)" || fail "files differ from MANIFEST.sha256: $bad"
listed="$(cut -c67- MANIFEST.sha256)"
present="$(find . -type f ! -path ./MANIFEST.sha256 | sed 's|^\./||' | LC_ALL=C sort)"
[ "$listed" = "$present" ] || fail "files not listed in MANIFEST.sha256: $(printf '%s\n' "$present" | grep -vxF "$listed" | head -5 | tr '\n' ' ')"
echo "model-fetch: $MODEL_CONTENT_DIGEST verified ($(wc -l < MANIFEST.sha256) files in $MODEL_DST)"
