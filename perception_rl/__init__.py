"""perception_rl: a ROS 2 package in which a robot learns to see while it acts."""
