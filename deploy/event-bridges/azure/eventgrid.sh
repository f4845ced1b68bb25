#!/usr/bin/env bash
# spotwatch on Azure: Event Grid system topics of Azure Resource Notifications → `spotwatch webhook`
# (POST /v1/events/eventgrid), in the Event Grid schema:
#   Microsoft.ResourceNotifications.MaintenanceResources  ScheduledEventEmitted  (Scheduled Events of every VM /
#                                                          scale-set VM of the subscription: Preempt, Terminate,
#                                                          Reboot, Redeploy, Freeze, and their Canceled/Completed)
#   Microsoft.ResourceNotifications.HealthResources       ResourceAnnotated      (Resource Health annotations, e.g.
#                                                          a Spot eviction)
# Event Grid first sends a SubscriptionValidationEvent; the webhook answers it, so creation completes only
# once the webhook runs with the matching key (or Entra ID settings).
#
#   SUBSCRIPTION_ID=… RESOURCE_GROUP=spotwatch WEBHOOK_URL=https://spotwatch.example.com KEY=… deploy/event-bridges/azure/eventgrid.sh
#   DRY_RUN=1 …                      # print the commands (arguments separated by \x1f) instead of running them
#
# Environment:
#   SUBSCRIPTION_ID   subscription whose VMs are watched                                 required
#   RESOURCE_GROUP    resource group that holds the system topics (must exist)          required
#   WEBHOOK_URL       public HTTPS base URL of spotwatch webhook, no trailing slash      required
#   AUTH              query (default): the key as ?code= in the endpoint URL, which Event Grid also sends on
#                                      the validation handshake;
#                     header:          the key in an aeg-sas-key delivery header (secret delivery attribute);
#                     entra:           an Entra ID token for TENANT_ID / APP_ID_OR_URI (the webhook's
#                                      SPOTWATCH_EVENTGRID_TENANT_ID / _AUDIENCE)
#   KEY               shared key = the webhook's SPOTWATCH_EVENTGRID_KEY (16+ characters; AUTH query or header)
#   TENANT_ID, APP_ID_OR_URI   for AUTH=entra
#   SCHEMA            eventgridschema (default) or cloudeventschemav1_0 (the webhook takes both)
#   PREFIX            name prefix of the topics and subscriptions (default spotwatch)
set -euo pipefail

die() { printf 'eventgrid: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'eventgrid: %s\n' "$*" >&2; }

: "${SUBSCRIPTION_ID:?set SUBSCRIPTION_ID}"
: "${RESOURCE_GROUP:?set RESOURCE_GROUP}"
: "${WEBHOOK_URL:?set WEBHOOK_URL (https://… base URL of spotwatch webhook)}"
case "$WEBHOOK_URL" in https://*) ;; *) die "WEBHOOK_URL must be https://" ;; esac
WEBHOOK_URL=${WEBHOOK_URL%/}
AUTH=${AUTH:-query}
SCHEMA=${SCHEMA:-eventgridschema}
PREFIX=${PREFIX:-spotwatch}
ENDPOINT="$WEBHOOK_URL/v1/events/eventgrid"

case "$SCHEMA" in eventgridschema|cloudeventschemav1_0) ;; *) die "SCHEMA must be eventgridschema or cloudeventschemav1_0" ;; esac
auth_flags=()
case "$AUTH" in
  query|header)
    : "${KEY:?set KEY (= SPOTWATCH_EVENTGRID_KEY of the webhook)}"
    [ "${#KEY}" -ge 16 ] || die "KEY must be at least 16 characters"
    case "$KEY" in *[!A-Za-z0-9._~-]*) die "KEY may only use A-Z a-z 0-9 . _ ~ - (it goes into a URL or header)" ;; esac
    if [ "$AUTH" = query ]; then ENDPOINT="$ENDPOINT?code=$KEY"; else auth_flags=(--delivery-attribute-mapping aeg-sas-key static "$KEY" true); fi
    ;;
  entra)
    : "${TENANT_ID:?set TENANT_ID for AUTH=entra}"
    : "${APP_ID_OR_URI:?set APP_ID_OR_URI for AUTH=entra}"
    auth_flags=(--azure-active-directory-tenant-id "$TENANT_ID" --azure-active-directory-application-id-or-uri "$APP_ID_OR_URI")
    ;;
  *) die "AUTH must be query, header or entra" ;;
esac

run() {
  if [ -n "${DRY_RUN:-}" ]; then
    printf '%s\x1f' "$@"
    printf '\n'
  else
    "$@"
  fi
}
exists() { [ -z "${DRY_RUN:-}" ] && "$@" >/dev/null 2>&1; }

# topic type and the event type spotwatch reads from it
SOURCES=(
  "Microsoft.ResourceNotifications.MaintenanceResources Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted maintenance"
  "Microsoft.ResourceNotifications.HealthResources Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated health"
)

for line in "${SOURCES[@]}"; do
  read -r topic_type event_type short <<<"$line"
  topic="$PREFIX-$short"
  say "system topic $topic ($topic_type) → $WEBHOOK_URL/v1/events/eventgrid ($event_type, $SCHEMA, auth $AUTH)"
  exists az eventgrid system-topic show --name "$topic" --resource-group "$RESOURCE_GROUP" --subscription "$SUBSCRIPTION_ID" ||
    run az eventgrid system-topic create --name "$topic" --resource-group "$RESOURCE_GROUP" --subscription "$SUBSCRIPTION_ID" \
      --location global --topic-type "$topic_type" --source "/subscriptions/$SUBSCRIPTION_ID"
  # A notice matters for minutes: retry often, give up after 10 minutes.
  run az eventgrid system-topic event-subscription create --name "$PREFIX-webhook" --resource-group "$RESOURCE_GROUP" \
    --subscription "$SUBSCRIPTION_ID" --system-topic-name "$topic" --endpoint-type webhook --endpoint "$ENDPOINT" \
    --included-event-types "$event_type" --event-delivery-schema "$SCHEMA" --max-delivery-attempts 30 --event-ttl 10 \
    "${auth_flags[@]}"
done

say "done. The webhook needs:"
case "$AUTH" in
  entra) printf 'SPOTWATCH_EVENTGRID_TENANT_ID=%s\nSPOTWATCH_EVENTGRID_AUDIENCE=%s\n' "$TENANT_ID" "$APP_ID_OR_URI" >&2 ;;
  *) printf 'SPOTWATCH_EVENTGRID_KEY=<KEY>\n' >&2 ;;
esac
