#!/usr/bin/env bash
# spotwatch on GCP: Compute Engine preemptions (Spot and preemptible VMs) → Cloud Logging sink → Pub/Sub topic
# → push subscription with an OIDC token → `spotwatch webhook` (POST /v1/events/pubsub).
#
#   PROJECT=my-project WEBHOOK_URL=https://spotwatch.example.com deploy/event-bridges/gcp/pubsub-push.sh
#   DRY_RUN=1 PROJECT=... WEBHOOK_URL=... deploy/event-bridges/gcp/pubsub-push.sh   # print the commands only
#
# The preemption is the System Event audit log entry `compute.instances.preempted` (written when the VM is
# stopped; the VM itself sees the 30 s notice in its metadata server, which the agent watches). The push
# subscription authenticates as a service account; the webhook checks the token's signature, issuer,
# audience and email. At the end the script prints the webhook settings that match.
#
# Environment:
#   PROJECT          project of the VMs (and of the topic, sink and subscription)      required
#   WEBHOOK_URL      public HTTPS base URL of spotwatch webhook, no trailing slash     required
#   TOPIC            Pub/Sub topic                       (default spotwatch-preemptions)
#   SINK             Cloud Logging sink                  (default spotwatch-preemptions)
#   SUBSCRIPTION     push subscription                   (default spotwatch-webhook)
#   PUSH_SA_NAME     service account the pushes authenticate as (default spotwatch-push)
#   AUDIENCE         OIDC audience                       (default: the push endpoint URL, as Pub/Sub does)
#   DRY_RUN=1        print each command (arguments separated by \x1f) instead of running it
set -euo pipefail

die() { printf 'pubsub-push: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'pubsub-push: %s\n' "$*" >&2; }

: "${PROJECT:?set PROJECT (the GCP project id)}"
: "${WEBHOOK_URL:?set WEBHOOK_URL (https://… base URL of spotwatch webhook)}"
case "$WEBHOOK_URL" in https://*) ;; *) die "WEBHOOK_URL must be https://" ;; esac
WEBHOOK_URL=${WEBHOOK_URL%/}
TOPIC=${TOPIC:-spotwatch-preemptions}
SINK=${SINK:-spotwatch-preemptions}
SUBSCRIPTION=${SUBSCRIPTION:-spotwatch-webhook}
PUSH_SA_NAME=${PUSH_SA_NAME:-spotwatch-push}
PUSH_ENDPOINT="$WEBHOOK_URL/v1/events/pubsub"
AUDIENCE=${AUDIENCE:-$PUSH_ENDPOINT}
PUSH_SA="$PUSH_SA_NAME@$PROJECT.iam.gserviceaccount.com"

# Only preemptions, from the Compute Engine System Event audit log.
LOG_FILTER='resource.type="gce_instance" AND logName:"cloudaudit.googleapis.com%2Fsystem_event" AND protoPayload.methodName="compute.instances.preempted"'

run() {
  if [ -n "${DRY_RUN:-}" ]; then
    printf '%s\x1f' "$@"
    printf '\n'
  else
    "$@"
  fi
}
# A value read from gcloud (a placeholder in a dry run).
query() { # placeholder command...
  local placeholder=$1
  shift
  if [ -n "${DRY_RUN:-}" ]; then echo "$placeholder"; else "$@"; fi
}
exists() { [ -z "${DRY_RUN:-}" ] && "$@" >/dev/null 2>&1; }

say "project $PROJECT: topic $TOPIC, sink $SINK, push subscription $SUBSCRIPTION → $PUSH_ENDPOINT"

exists gcloud pubsub topics describe "$TOPIC" --project "$PROJECT" ||
  run gcloud pubsub topics create "$TOPIC" --project "$PROJECT"

if exists gcloud logging sinks describe "$SINK" --project "$PROJECT"; then
  run gcloud logging sinks update "$SINK" "pubsub.googleapis.com/projects/$PROJECT/topics/$TOPIC" --project "$PROJECT" --log-filter "$LOG_FILTER"
else
  run gcloud logging sinks create "$SINK" "pubsub.googleapis.com/projects/$PROJECT/topics/$TOPIC" --project "$PROJECT" --log-filter "$LOG_FILTER"
fi
# The sink writes as its own identity: let it publish to the topic.
WRITER=$(query 'serviceAccount:WRITER_IDENTITY' gcloud logging sinks describe "$SINK" --project "$PROJECT" --format 'value(writerIdentity)')
run gcloud pubsub topics add-iam-policy-binding "$TOPIC" --project "$PROJECT" --member "$WRITER" --role roles/pubsub.publisher

exists gcloud iam service-accounts describe "$PUSH_SA" --project "$PROJECT" ||
  run gcloud iam service-accounts create "$PUSH_SA_NAME" --project "$PROJECT" --display-name "spotwatch Pub/Sub push"
# Pub/Sub's service agent mints the push tokens for that account.
NUMBER=$(query 'PROJECT_NUMBER' gcloud projects describe "$PROJECT" --format 'value(projectNumber)')
run gcloud iam service-accounts add-iam-policy-binding "$PUSH_SA" --project "$PROJECT" \
  --member "serviceAccount:service-$NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com" --role roles/iam.serviceAccountTokenCreator

push_flags=(--push-endpoint "$PUSH_ENDPOINT" --push-auth-service-account "$PUSH_SA" --push-auth-token-audience "$AUDIENCE")
if exists gcloud pubsub subscriptions describe "$SUBSCRIPTION" --project "$PROJECT"; then
  run gcloud pubsub subscriptions update "$SUBSCRIPTION" --project "$PROJECT" "${push_flags[@]}"
else
  # A preemption is worth delivering for minutes, not days; retry fast.
  run gcloud pubsub subscriptions create "$SUBSCRIPTION" --project "$PROJECT" --topic "$TOPIC" "${push_flags[@]}" \
    --ack-deadline 10 --message-retention-duration 10m --min-retry-delay 1s --max-retry-delay 10s --expiration-period never
fi

say "done. Configure spotwatch webhook with:"
printf 'SPOTWATCH_PUBSUB_AUDIENCE=%s\nSPOTWATCH_PUBSUB_SERVICE_ACCOUNT=%s\n' "$AUDIENCE" "$PUSH_SA" >&2
