# Report of benches/e2e.sh: the Markdown tables from runs.tsv (one row per wrk run).
#   awk -F'\t' -v conns=CONNS -v cold=MIX_COLD_CONNS -v body=BODY_BYTES -f report.awk runs.tsv
# Medians over rounds per (HAProxy, variant, frontend); CPU per request averaged.
NR == 1 { next }
{
  k = $1 SUBSEP $2 SUBSEP $4
  if (!(k in n)) { order[++nk] = k }
  n[k]++; rps[k, n[k]] = $5; p99[k, n[k]] = $7; hus[k] += $11; aus[k] += $12
  if ($12 == "") noagent[k] = 1
  if ($13 != "") { hsys[k] += $13; nsys[k]++; syscalls = 1 }
  if ($14 != "") asys[k] += $14
}
function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
function median(arr, k, cnt,   i, j, t, v) {
  for (i = 1; i <= cnt; i++) v[i] = arr[k, i] + 0
  for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  return cnt % 2 ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2
}
END {
  printf "| HAProxy | variant | frontend | req/s (median) | p99 µs (median) | HAProxy CPU µs/req | agent CPU µs/req |%s\n", syscalls ? " HAProxy syscalls/req | agent syscalls/req |" : ""
  printf "|---|---|---|---:|---:|---:|---:|%s\n", syscalls ? "---:|---:|" : ""
  for (i = 1; i <= nk; i++) {
    k = order[i]; split(k, f, SUBSEP)
    m = median(rps, k, n[k]); q = median(p99, k, n[k])
    med_rps[k] = m; med_p99[k] = q
    sys = ""
    if (syscalls) sys = sprintf(" %s | %s |", (k in nsys) ? sprintf("%.2f", hsys[k] / nsys[k]) : "-", (k in nsys) && !(k in noagent) ? sprintf("%.2f", asys[k] / nsys[k]) : "-")
    printf "| %s | %s | %s | %.0f | %.0f | %.1f | %s |%s\n", f[1], f[2], f[3], m, q, hus[k] / n[k], (k in noagent) ? "-" : sprintf("%.1f", aus[k] / n[k]), sys
  }
  for (i = 1; i <= nk; i++) {
    k = order[i]; split(k, f, SUBSEP)
    if (f[2] == "serving") { if (f[3] == "idgate") served[++ns] = k; continue }
    if (f[3] != "idgate" && f[3] != "cold") { if (f[3] ~ /:hot$/) mixed[++nm] = k; continue }
    j = f[1] SUBSEP f[2] SUBSEP "jwt"; nl = f[1] SUBSEP f[2] SUBSEP "null"; sp = f[1] SUBSEP f[2] SUBSEP "spoa"
    ni = f[1] SUBSEP f[2] SUBSEP "nullid"
    if (!nr++) {
      print ""
      print "| HAProxy | variant | idgate / jwt_verify req/s | idgate / null req/s | idgate / null (same answer) req/s | idgate / spoa_example req/s | idgate p99 / jwt_verify p99 |"
      print "|---|---|---:|---:|---:|---:|---:|"
    }
    printf "| %s | %s (%s) | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], ratio(med_rps[k], med_rps[j]), ratio(med_rps[k], med_rps[nl]), ratio(med_rps[k], med_rps[ni]), ratio(med_rps[k], med_rps[sp]), ratio(med_p99[k], med_p99[j])
  }
  if (ns > 0) {
    print ""
    printf "Model serving (%d-byte dataframe_split body; req/s, and in brackets the ratio to the column before it):\n", body
    print ""
    print "| HAProxy | GET, no serving branch | GET, serving branch | POST, body not sent | POST, body sent, no check | POST, payload check | POST, check + JSON Schema |"
    print "|---|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= ns; i++) {
      k = served[i]; split(k, f, SUBSEP); p = f[1] SUBSEP f[2] SUBSEP
      printf "| %s | %.0f | %.0f (%s) | %.0f | %.0f (%s) | %.0f (%s) | %.0f (%s) |\n", f[1], med_rps[k], med_rps[p "srvget"], ratio(med_rps[p "srvget"], med_rps[k]), med_rps[p "nobody"], med_rps[p "srvpost"], ratio(med_rps[p "srvpost"], med_rps[p "nobody"]), med_rps[p "srvformat"], ratio(med_rps[p "srvformat"], med_rps[p "srvpost"]), med_rps[p "srvschema"], ratio(med_rps[p "srvschema"], med_rps[p "srvformat"])
    }
  }
  if (nm == 0) exit
  print ""
  printf "Mixed load (%d connections with the hot token, %d at once with broken signatures):\n", conns - cold, cold
  print ""
  print "| HAProxy | frontend | hot req/s alone | hot p99 µs alone | hot req/s in mix | hot p99 µs in mix | cold req/s in mix | cold p99 µs in mix |"
  print "|---|---|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= nm; i++) {
    k = mixed[i]; split(k, f, SUBSEP); fe = substr(f[3], 1, length(f[3]) - 4)
    a = f[1] SUBSEP f[2] SUBSEP fe ":hot-alone"; c = f[1] SUBSEP f[2] SUBSEP fe ":cold"
    printf "| %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |\n", f[1], fe, med_rps[a], med_p99[a], med_rps[k], med_p99[k], med_rps[c], med_p99[c]
  }
}
