from hsm_sim.cli import main

main()
