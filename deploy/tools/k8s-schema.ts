/**
 * Offline validation of Kubernetes objects against the API's OpenAPI schemas, as compiled by the npm packages
 * `kubernetes-models` (core API groups) and `@kubernetes-models/prometheus-operator` (ServiceMonitor).
 *
 * Those validators check types, formats, enums and required fields but, like the OpenAPI schemas, let unknown
 * fields through (the API server would drop them, or with fieldValidation=Strict refuse them). A typo such
 * as `tolerations` under the wrong key would pass. So every object is also checked strictly: the validator
 * runs on a Proxy that records which properties it looks at; a property it never reads is not in the schema.
 * Maps (labels, annotations, `stringData`) are enumerated by the validator, which marks all their keys known.
 */
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1';
import { DaemonSet, Deployment } from 'kubernetes-models/apps/v1';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { Namespace, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';

interface ModelClass {
  prototype: { validate(): void };
}

const MODELS: Record<string, ModelClass> = {
  'v1/Namespace': Namespace,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'apps/v1/DaemonSet': DaemonSet,
  'apps/v1/Deployment': Deployment,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/Ingress': Ingress,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': ValidatingAdmissionPolicy,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': ValidatingAdmissionPolicyBinding,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
};

export const KNOWN_KINDS = Object.keys(MODELS);

type Seen = Set<string> | 'all';

/** Runs `validate` on a recording proxy of `value`; returns the schema errors and the unknown field paths. */
function recordAccess(value: unknown, validate: (data: unknown) => void): { error: string | undefined; unknown: string[] } {
  const seen = new WeakMap<object, Seen>();
  const proxies = new WeakMap<object, unknown>();
  const mark = (target: object, key: string | symbol) => {
    if (typeof key !== 'string') return;
    const s = seen.get(target);
    if (s === 'all') return;
    if (s) s.add(key);
    else seen.set(target, new Set([key]));
  };
  const wrap = (v: unknown): unknown => {
    if (v === null || typeof v !== 'object') return v;
    const existing = proxies.get(v);
    if (existing) return existing;
    const proxy = new Proxy(v, {
      get(target, key, receiver) {
        mark(target, key);
        return wrap(Reflect.get(target, key, receiver));
      },
      has(target, key) {
        mark(target, key);
        return Reflect.has(target, key);
      },
      ownKeys(target) {
        seen.set(target, 'all');
        return Reflect.ownKeys(target);
      },
      getOwnPropertyDescriptor(target, key) {
        mark(target, key);
        return Reflect.getOwnPropertyDescriptor(target, key);
      },
    });
    proxies.set(v, proxy);
    return proxy;
  };
  let error: string | undefined;
  try {
    validate(wrap(value));
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
  }
  const unknown: string[] = [];
  const walk = (v: unknown, path: string) => {
    if (v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) {
      v.forEach((item, i) => walk(item, `${path}[${i}]`));
      return;
    }
    const s = seen.get(v);
    for (const [k, child] of Object.entries(v)) {
      const p = path ? `${path}.${k}` : k;
      if (s !== 'all' && !s?.has(k)) unknown.push(p);
      else walk(child, p);
    }
  };
  walk(value, '');
  return { error, unknown };
}

export interface SchemaProblem {
  object: string;
  problem: string;
}

/** Validates one object; returns its problems (none: valid against the schema, no unknown field). */
export function validateObject(obj: unknown): SchemaProblem[] {
  const o = obj as { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
  const id = `${String(o?.kind)}/${String(o?.metadata?.name)}`;
  const key = `${String(o?.apiVersion)}/${String(o?.kind)}`;
  const model = MODELS[key];
  if (!model) return [{ object: id, problem: `no schema for ${key} (known: ${KNOWN_KINDS.join(', ')})` }];
  const { error, unknown } = recordAccess(obj, (data) => model.prototype.validate.call(data));
  const problems: SchemaProblem[] = [];
  if (error) problems.push({ object: id, problem: error });
  for (const path of unknown) problems.push({ object: id, problem: `unknown field ${path}` });
  return problems;
}
