#!/usr/bin/env bash
# deploy-app.sh: deploy a small three-function application to Lambent (or AWS
# Lambda) with nothing but the AWS CLI.
#
# What it deploys (sources under tests/deploy/app/):
#   - layer   PREFIX-shared       python/apphelpers.py, a helper module
#   - functions PREFIX-greeter, PREFIX-calculator, PREFIX-reporter
#             (python3.12, handler app.handler, all using the layer)
#   - for each function: a published version, aliases `dev` and `prod`
#     pointing at it, and tags app=PREFIX, managed-by=deploy-app.sh
#   - a resource-policy statement (AddPermission, Sid `allow-eventbridge`)
#     letting EventBridge invoke PREFIX-greeter
# It then invokes every function through `prod` and prints a summary.
#
# Usage:
#   AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… AWS_DEFAULT_REGION=us-east-1 \
#   tests/deploy/deploy-app.sh [--endpoint-url URL] [--prefix NAME] [--role ARN]
#
#   --endpoint-url  the Lambda endpoint (default: $AWS_ENDPOINT_URL; with
#                   neither, the CLI's own default, i.e. real AWS)
#   --prefix        name prefix of every resource (default: lambent-demo)
#   --role          execution role ARN (default: the built-in role lambent-default in account
#                   000000000000, which Lambent accepts; pass a real one on AWS)
# Environment: the usual AWS_* credentials/region variables; AWS_CLI overrides
# the `aws` command (e.g. AWS_CLI="python -m awscli").  Works with AWS CLI v1
# and v2 (v2 gets --cli-binary-format raw-in-base64-out for payloads).
#
# Re-running it is safe: existing functions get their code and configuration
# updated, a new version is published only if something changed, aliases are
# moved, the permission statement is replaced.  Any failing call stops the
# script with the CLI's error message and a non-zero exit status.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
app="$here/app"

endpoint="${AWS_ENDPOINT_URL:-}"
prefix="lambent-demo"
role="arn:aws:iam::000000000000:role/lambent-default"

die() {
    echo "deploy-app: error: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
    --endpoint-url) endpoint="${2:?--endpoint-url needs a value}"; shift 2 ;;
    --endpoint-url=*) endpoint="${1#*=}"; shift ;;
    --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --role) role="${2:?--role needs a value}"; shift 2 ;;
    --role=*) role="${1#*=}"; shift ;;
    -h | --help) sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

read -r -a aws_cmd <<<"${AWS_CLI:-aws}"
command -v "${aws_cmd[0]}" >/dev/null 2>&1 || die "AWS CLI not found: ${aws_cmd[0]} (set AWS_CLI)"

common=(--output json)
if [[ -n "$endpoint" ]]; then
    common+=(--endpoint-url "$endpoint")
fi
payload_fmt=()
if "${aws_cmd[@]}" --version 2>&1 | grep -q 'aws-cli/2'; then
    payload_fmt=(--cli-binary-format raw-in-base64-out)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# lam ARGS...: `aws lambda ARGS...`; on failure print the CLI's error and exit.
lam() {
    local out
    if ! out="$("${aws_cmd[@]}" lambda "$@" "${common[@]}" 2>"$work/stderr")"; then
        echo "deploy-app: error: aws lambda $1 failed:" >&2
        cat "$work/stderr" >&2
        exit 1
    fi
    printf '%s' "$out"
}

# lam_query QUERY ARGS...: like lam, printing one --query value as text.
lam_query() {
    local query="$1"
    shift
    local out
    if ! out="$("${aws_cmd[@]}" lambda "$@" "${common[@]}" --query "$query" --output text 2>"$work/stderr")"; then
        echo "deploy-app: error: aws lambda $1 failed:" >&2
        cat "$work/stderr" >&2
        exit 1
    fi
    printf '%s' "$out"
}

# exists ARGS...: 0 if `aws lambda ARGS` succeeds, 1 on ResourceNotFoundException,
# exit on any other error (bad credentials, unreachable endpoint, ...).
exists() {
    if "${aws_cmd[@]}" lambda "$@" "${common[@]}" >/dev/null 2>"$work/stderr"; then
        return 0
    fi
    if grep -q 'ResourceNotFoundException' "$work/stderr"; then
        return 1
    fi
    echo "deploy-app: error: aws lambda $1 failed:" >&2
    cat "$work/stderr" >&2
    exit 1
}

make_zip() { # make_zip OUT DIR: zip DIR's contents (deterministic order)
    local out="$1" dir="$2"
    if command -v zip >/dev/null 2>&1; then
        (cd "$dir" && find . -type f ! -name '*.pyc' | LC_ALL=C sort | zip -X -q "$out" -@)
    else
        python3 - "$out" "$dir" <<'PY'
import os, sys, zipfile
out, root = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for base, _dirs, files in sorted(os.walk(root)):
        for f in sorted(files):
            if not f.endswith(".pyc"):
                p = os.path.join(base, f)
                zf.write(p, os.path.relpath(p, root))
PY
    fi
    [[ -s "$out" ]] || die "could not build $out"
}

functions=(greeter calculator reporter)
layer_name="$prefix-shared"
tags="app=$prefix,managed-by=deploy-app.sh"

echo "==> building packages"
make_zip "$work/layer.zip" "$app/layer"
for f in "${functions[@]}"; do
    [[ -f "$app/functions/$f/app.py" ]] || die "missing $app/functions/$f/app.py"
    make_zip "$work/$f.zip" "$app/functions/$f"
done

sha256_b64() { # base64 of the raw SHA-256 digest, as Lambda's CodeSha256
    if command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha256 -binary "$1" | base64
    else
        python3 -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha256(open(sys.argv[1], "rb").read()).digest()).decode())' "$1"
    fi
}

echo "==> layer $layer_name"
# reuse the newest layer version when its content is the same
layer_arn=""
if exists list-layer-versions --layer-name "$layer_name"; then
    newest="$(lam_query 'LayerVersions[0].LayerVersionArn' list-layer-versions --layer-name "$layer_name")"
    if [[ "$newest" == arn:* ]] &&
        [[ "$(lam_query Content.CodeSha256 get-layer-version-by-arn --arn "$newest")" == "$(sha256_b64 "$work/layer.zip")" ]]; then
        layer_arn="$newest"
        echo "    unchanged, reusing"
    fi
fi
if [[ -z "$layer_arn" ]]; then
    layer_arn="$(lam_query LayerVersionArn publish-layer-version \
        --layer-name "$layer_name" \
        --description "shared helpers for $prefix" \
        --compatible-runtimes python3.12 \
        --zip-file "fileb://$work/layer.zip")"
    echo "    published"
fi
[[ "$layer_arn" == arn:*:layer:* ]] || die "unexpected layer version ARN: $layer_arn"
echo "    $layer_arn"

declare -A version alias_arn result
for f in "${functions[@]}"; do
    name="$prefix-$f"
    echo "==> deploying function $name"
    env_vars="Variables={APP_STAGE=prod,APP_NAME=$prefix}"
    if exists get-function --function-name "$name"; then
        lam update-function-code --function-name "$name" --zip-file "fileb://$work/$f.zip" >/dev/null
        lam wait function-updated --function-name "$name"
        lam update-function-configuration --function-name "$name" \
            --runtime python3.12 --handler app.handler --role "$role" \
            --timeout 10 --memory-size 256 \
            --layers "$layer_arn" --environment "$env_vars" >/dev/null
        lam wait function-updated --function-name "$name"
    else
        lam create-function --function-name "$name" \
            --runtime python3.12 --handler app.handler --role "$role" \
            --timeout 10 --memory-size 256 \
            --layers "$layer_arn" --environment "$env_vars" \
            --tags "$tags" \
            --zip-file "fileb://$work/$f.zip" >/dev/null
        lam wait function-active --function-name "$name"
    fi
    fn_arn="$(lam_query Configuration.FunctionArn get-function --function-name "$name")"

    echo "    tagging"
    lam tag-resource --resource "$fn_arn" --tags "$tags" >/dev/null

    v="$(lam_query Version publish-version --function-name "$name" --description "deployed by deploy-app.sh")"
    [[ "$v" =~ ^[0-9]+$ ]] || die "publish-version of $name returned version '$v'"
    version[$f]="$v"
    echo "    published version $v"

    for a in dev prod; do
        if exists get-alias --function-name "$name" --name "$a"; then
            lam update-alias --function-name "$name" --name "$a" --function-version "$v" >/dev/null
        else
            lam create-alias --function-name "$name" --name "$a" --function-version "$v" \
                --description "$a stage of $prefix" >/dev/null
        fi
    done
    alias_arn[$f]="$(lam_query AliasArn get-alias --function-name "$name" --name prod)"
    echo "    aliases dev, prod -> $v"
done

greeter="$prefix-greeter"
account="$(cut -d: -f5 <<<"$fn_arn")"
region="$(cut -d: -f4 <<<"$fn_arn")"
echo "==> resource policy on $greeter"
# replace the statement if an earlier run added it
if exists get-policy --function-name "$greeter"; then
    if lam_query Policy get-policy --function-name "$greeter" | grep -q '"allow-eventbridge"'; then
        lam remove-permission --function-name "$greeter" --statement-id allow-eventbridge >/dev/null
    fi
fi
lam add-permission --function-name "$greeter" \
    --statement-id allow-eventbridge \
    --action lambda:InvokeFunction \
    --principal events.amazonaws.com \
    --source-arn "arn:aws:events:$region:$account:rule/$prefix-schedule" >/dev/null
echo "    statement allow-eventbridge added"

echo "==> invoking through prod"
for f in "${functions[@]}"; do
    name="$prefix-$f"
    case "$f" in
    greeter) payload='{"name":"deploy-app"}' ;;
    calculator) payload='{"numbers":[1,2,3,4]}' ;;
    *) payload='{}' ;;
    esac
    meta="$(lam invoke --function-name "$name" --qualifier prod \
        "${payload_fmt[@]}" --payload "$payload" "$work/$f.out")"
    if grep -q '"FunctionError"' <<<"$meta"; then
        echo "deploy-app: error: $name:prod failed: $(cat "$work/$f.out")" >&2
        exit 1
    fi
    grep -q '"StatusCode": 200' <<<"$meta" || die "$name:prod invoke: unexpected response: $meta"
    result[$f]="$(cat "$work/$f.out")"
    echo "    $name:prod -> ${result[$f]}"
done

echo
echo "==> summary"
printf '%-28s %-8s %s\n' "FUNCTION" "VERSION" "PROD ALIAS"
for f in "${functions[@]}"; do
    printf '%-28s %-8s %s\n' "$prefix-$f" "${version[$f]}" "${alias_arn[$f]}"
done
echo "layer: $layer_arn"
echo "policy: $greeter allows events.amazonaws.com (Sid allow-eventbridge)"
echo "deploy-app: OK"
