# The Consul server of the platform: one node, its own leader; the KV store and the catalogue.
# Mounted at /consul/config in the hashicorp/consul image (`consul agent` reads that directory).
node_name        = "consul-server"
datacenter       = "dc1"
server           = true
bootstrap_expect = 1
data_dir         = "/consul/data"
client_addr      = "0.0.0.0"

ui_config {
  enabled = true
}
