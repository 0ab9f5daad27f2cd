# The Consul client agent the services talk to (CONSUL_HOST=consul-client): instances register
# with it, it runs their /health checks, and consul-template watches the catalogue through it.
node_name   = "consul-client"
datacenter  = "dc1"
server      = false
data_dir    = "/consul/data"
client_addr = "0.0.0.0"
retry_join  = ["consul-server"]
