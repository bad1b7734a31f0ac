from sage_cluster.cli import main

main()
