# consul-template in the load balancer image: render nginx's upstream of the passing `messenger`
# instances and reload nginx gracefully whenever that set changes.
# The agent's address comes from CONSUL_HTTP_ADDR (e.g. consul-client:8500).

# docker stop sends SIGTERM: consul-template then stops nginx gracefully (exec.kill_signal).
kill_signal = "SIGTERM"
log_level   = "info"

consul {
  retry {
    enabled     = true
    attempts    = 0 # retry for ever: the load balancer outlives a Consul agent restart
    backoff     = "250ms"
    max_backoff = "10s"
  }
}

template {
  source      = "/etc/consul-template/nginx.ctmpl"
  destination = "/etc/nginx/conf.d/messenger.conf"
  perms       = 0644

  # Instances come and go in bursts when scaling: batch the changes into one reload.
  wait {
    min = "1s"
    max = "5s"
  }
}

# nginx runs under consul-template, which starts it once the template has rendered (so nginx
# starts even with no passing instance: the rendered upstream then answers 503 JSON).
exec {
  command = ["nginx", "-g", "daemon off;"]

  # SIGHUP: nginx re-reads its configuration, starts new workers and lets the old ones finish
  # their requests; a configuration that does not load is refused and the old one kept.
  reload_signal = "SIGHUP"

  # SIGQUIT: nginx's graceful shutdown, finishing the requests in flight.
  kill_signal  = "SIGQUIT"
  kill_timeout = "30s"
}
