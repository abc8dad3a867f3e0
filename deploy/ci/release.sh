#!/usr/bin/env bash
# Ships one revision of a service through rolloutd with no human step, for a
# CI pipeline (tested as written by crates/rolloutctl/tests/cli.rs):
#
#   deploy/ci/release.sh ROLLOUT SPEC_FILE REVISION
#
# 1. asks rolloutd which target group the revision goes into (the idle one
#    of the rollout's `targetGroups`; nothing there serves production);
# 2. runs "$DEPLOY_COMMAND TARGET_GROUP_ARN REVISION", your deploy (an ECS
#    service update, an Auto Scaling instance refresh, ...), which puts the
#    build into that target group;
# 3. writes REVISION into SPEC_FILE's `revision:` and applies it: the run
#    starts (commit SPEC_FILE afterwards if your specs live in git);
# 4. follows the run until it ends. The exit code says how: 0 succeeded,
#    1 rolled back, aborted or failed (the reason on stderr), 3 rolloutd
#    could not be reached.
#
# Environment: DEPLOY_COMMAND (required); ROLLOUTCTL (default rolloutctl);
# ROLLOUTCTL_FLAGS (e.g. "--server https://rolloutd.internal:8080
# --token-file /run/secrets/rolloutd"); or ROLLOUTD_SERVER / ROLLOUTD_TOKEN.
# The rollout must exist (applied once by hand or by GitOps).
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 ROLLOUT SPEC_FILE REVISION" >&2
  exit 2
fi
rollout=$1 spec=$2 revision=$3
: "${DEPLOY_COMMAND:?set DEPLOY_COMMAND to the command that deploys a revision into a target group}"
# shellcheck disable=SC2206 # the flags are words on purpose
ctl=(${ROLLOUTCTL:-rolloutctl} ${ROLLOUTCTL_FLAGS:-})

target=$("${ctl[@]}" target "$rollout")
echo "release $revision of $rollout: deploying into $target"
$DEPLOY_COMMAND "$target" "$revision"

sed -i.bak -E "s/^(  revision:).*/\1 \"$revision\"/" "$spec"
rm -f "$spec.bak"
"${ctl[@]}" apply -f "$spec"

"${ctl[@]}" status "$rollout" --watch
